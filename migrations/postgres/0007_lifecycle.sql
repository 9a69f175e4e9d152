-- Certificate lifecycle and seats (issue 10).
-- The licence may end; after valid_until no seat is handed out (renewals go on).
ALTER TABLE licence ADD COLUMN valid_until BIGINT;

-- CRLs of the built-in CA, signed in the token. The newest row per issuer is what
-- GET /pki/... serves; older rows stay as a record of what was published.
CREATE TABLE published_crls (
    id                  BIGSERIAL PRIMARY KEY,
    issuer_fingerprint  TEXT    NOT NULL,            -- SHA-256 of the signing CA's certificate
    crl_number          BIGINT  NOT NULL,
    der                 BYTEA   NOT NULL,
    this_update         BIGINT  NOT NULL,
    next_update         BIGINT  NOT NULL,
    entries             BIGINT  NOT NULL,
    created_at          BIGINT  NOT NULL,
    UNIQUE (issuer_fingerprint, crl_number)
);

-- Leases that let one node at a time run a job (the lifecycle job).
CREATE TABLE job_leases (
    name        TEXT    PRIMARY KEY,
    holder      TEXT    NOT NULL,
    expires_at  BIGINT  NOT NULL
);
