-- SAML single sign-on to the console (issue 11).
-- Login requests we sent to the IdP and not yet seen answered: each ID is taken
-- (deleted) by the one response that answers it, so it works once; expired rows are
-- pruned when new requests are made.
CREATE TABLE saml_requests (
    id          TEXT    PRIMARY KEY,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL
);

-- IDs of assertions that logged someone in, kept until the assertion would have
-- expired anyway, so a replayed assertion is refused.
CREATE TABLE saml_assertions (
    id          TEXT    PRIMARY KEY,
    name_id     TEXT    NOT NULL,
    used_at     BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL
);
CREATE INDEX saml_assertions_expiry ON saml_assertions (expires_at);
