-- Revocation checks of partner certificates (issue 10 item 7).
-- partner_crls: the CRLs fetched from partner certificates' CRL distribution points,
-- one row per URL, shared by every node (each also keeps a copy in memory). A row is
-- replaced by every successful download; it is used until its next_update. The CRL is
-- verified (signature against the issuing CA, nextUpdate, extensions) each time it is
-- used, never on the word of this table.
CREATE TABLE partner_crls (
    url          TEXT    PRIMARY KEY,
    der          BLOB    NOT NULL,
    issuer       TEXT    NOT NULL,            -- RFC 4514 text, for operators
    this_update  BIGINT  NOT NULL,
    next_update  BIGINT,                      -- absent: the CRL is never current
    fetched_at   BIGINT  NOT NULL
);
-- CA certificates seen on verified paths of partner signatures (the intermediates a
-- signer carried): the issuers whose CRLs are checked before encrypting to a harvested
-- certificate later, when no signature carries the chain. Public data only.
CREATE TABLE partner_ca_certificates (
    fingerprint_sha256  TEXT    PRIMARY KEY,
    subject             TEXT    NOT NULL,
    der                 BLOB    NOT NULL,
    seen_at             BIGINT  NOT NULL
);
