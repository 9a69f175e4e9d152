-- smimegate schema, SQLite flavour (the embedded default).
-- Times are UNIX seconds (UTC). Flags are 0/1 integers. Addresses are stored lower-case.
-- The PostgreSQL flavour in ../postgres/ has the same tables and columns.

CREATE TABLE domains (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    next_hop    TEXT,                               -- host:port of the internal mail server
    wildcard    INTEGER NOT NULL DEFAULT 0,         -- 1: accept any local part (not activatable)
    created_at  BIGINT  NOT NULL
);

CREATE TABLE mailboxes (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    address              TEXT    NOT NULL UNIQUE,
    domain_id            INTEGER NOT NULL REFERENCES domains(id) ON DELETE RESTRICT,
    state                TEXT    NOT NULL DEFAULT 'inactive'
                         CHECK (state IN ('inactive', 'pending', 'active', 'revoke-pending')),
    state_changed_at     BIGINT  NOT NULL,
    revoke_requested_at  BIGINT,
    created_at           BIGINT  NOT NULL
);

CREATE TABLE keys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    cka_id      TEXT    NOT NULL UNIQUE,            -- hex; equals the certificate's SKI
    algorithm   TEXT    NOT NULL CHECK (algorithm IN ('rsa2048', 'rsa3072', 'p256')),
    purpose     TEXT    NOT NULL CHECK (purpose IN ('ca', 'mailbox', 'imported')),
    mailbox_id  INTEGER REFERENCES mailboxes(id) ON DELETE SET NULL,
    created_at  BIGINT  NOT NULL,
    retired_at  BIGINT                               -- kept for decrypting old mail
);
CREATE INDEX keys_mailbox ON keys(mailbox_id);

CREATE TABLE certificates (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    der                 BLOB    NOT NULL,
    subject             TEXT    NOT NULL,
    issuer              TEXT    NOT NULL,
    serial              TEXT    NOT NULL,            -- hex
    not_before          BIGINT  NOT NULL,
    not_after           BIGINT  NOT NULL,
    fingerprint_sha256  TEXT    NOT NULL UNIQUE,     -- hex of SHA-256 over the DER
    source              TEXT    NOT NULL
                        CHECK (source IN ('ca', 'issued', 'uploaded', 'harvested', 'trust-anchor')),
    owner_address       TEXT,
    key_id              INTEGER REFERENCES keys(id) ON DELETE RESTRICT,
    smime_capabilities  BLOB,                        -- DER SMIMECapabilities, when known
    revoked_at          BIGINT,
    revocation_reason   TEXT,
    created_at          BIGINT  NOT NULL,
    UNIQUE (issuer, serial)
);
CREATE INDEX certificates_owner ON certificates(owner_address);

CREATE TABLE rules (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    priority           BIGINT  NOT NULL,             -- 1 is highest
    direction          TEXT    NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    sender_matcher     TEXT    NOT NULL,
    recipient_matcher  TEXT    NOT NULL,
    action             TEXT    NOT NULL,
    enabled            INTEGER NOT NULL DEFAULT 1,
    comment            TEXT    NOT NULL DEFAULT '',
    created_at         BIGINT  NOT NULL,
    updated_at         BIGINT  NOT NULL
);
CREATE INDEX rules_direction_priority ON rules(direction, priority);

CREATE TABLE message_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at   BIGINT  NOT NULL,
    node          TEXT    NOT NULL,
    direction     TEXT    NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    mail_from     TEXT    NOT NULL,
    rcpt_to       TEXT    NOT NULL,                  -- JSON array of addresses
    message_id    TEXT,
    subject       TEXT,
    size_bytes    BIGINT  NOT NULL,
    status        TEXT    NOT NULL,                  -- relayed, rejected, deferred
    actions       TEXT    NOT NULL,                  -- JSON array: signed, encrypted, ...
    smtp_code     BIGINT,
    smtp_reply    TEXT,
    rule_id       INTEGER,
    duration_ms   BIGINT  NOT NULL
);
CREATE INDEX message_log_received ON message_log(received_at);
CREATE INDEX message_log_status ON message_log(status, received_at);

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      BIGINT NOT NULL,
    actor   TEXT   NOT NULL,                         -- user name, or cli:<unix user>
    origin  TEXT   NOT NULL,                         -- client address, or 'cli'
    action  TEXT   NOT NULL,
    target  TEXT   NOT NULL,
    detail  TEXT   NOT NULL DEFAULT ''
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

CREATE TABLE admin_users (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    username       TEXT    NOT NULL UNIQUE,
    display_name   TEXT    NOT NULL DEFAULT '',
    role           TEXT    NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    password_hash  TEXT,                             -- argon2id PHC string; break-glass accounts only
    sso_subject    TEXT    UNIQUE,
    disabled       INTEGER NOT NULL DEFAULT 0,
    created_at     BIGINT  NOT NULL,
    last_login_at  BIGINT
);

CREATE TABLE licence (
    id                   INTEGER PRIMARY KEY CHECK (id = 1),
    smime_seats          BIGINT NOT NULL,
    mail_security_seats  BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    CHECK (smime_seats <= mail_security_seats)
);
