-- Identities from elsewhere (issue 10, item 5).
-- The CA certificates that came with an uploaded identity (from its PKCS#12 file or
-- the PEM bundle of `mailbox import --certificate`), DER SEQUENCE OF Certificate,
-- nearest first; signed mail carries them. Kept with the identity rather than as rows
-- of their own, so a CA certificate can still become a trust anchor (one row per
-- fingerprint).
ALTER TABLE certificates ADD COLUMN chain BLOB;
