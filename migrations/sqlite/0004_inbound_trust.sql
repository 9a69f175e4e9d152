-- Inbound trust (issue 8).
-- A trust anchor vouches only for the mail domains it is given: one row per domain
-- pattern ("partner.example", or ".partner.example" for its subdomains). An anchor
-- without rows vouches for any domain except the managed ones; no partner anchor ever
-- vouches for a managed domain.
CREATE TABLE trust_anchor_domains (
    certificate_id  INTEGER NOT NULL REFERENCES certificates(id) ON DELETE CASCADE,
    pattern         TEXT    NOT NULL,
    PRIMARY KEY (certificate_id, pattern)
);
CREATE TRIGGER trust_anchor_domains_insert_bumps_version AFTER INSERT ON trust_anchor_domains
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER trust_anchor_domains_delete_bumps_version AFTER DELETE ON trust_anchor_domains
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
-- The signingTime of the signed message whose SMIMECapabilities are stored: a replayed
-- older message cannot replace them with weaker ones.
ALTER TABLE certificates ADD COLUMN capabilities_signed_at BIGINT;
-- The trust anchor (SHA-256 fingerprint) that vouched for a harvested certificate: it
-- is used for encryption only while that anchor is trusted for the partner's domain.
-- Certificates harvested before have none, and are not used until harvested again.
ALTER TABLE certificates ADD COLUMN vouched_by TEXT;
