-- The admin console (issue 11): local break-glass accounts, browser sessions and API
-- tokens. Secrets are never stored: passwords as argon2id PHC strings, session and
-- API tokens as the SHA-256 of the random token (hex), so a copy of the database
-- opens no console. SSO users have no account row; their sessions name the SAML
-- NameID.
CREATE TABLE console_accounts (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    name                TEXT    NOT NULL UNIQUE,
    role                TEXT    NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    password_hash       TEXT    NOT NULL,
    -- Base32 TOTP secret (RFC 6238), or NULL when the account uses none.
    totp_secret         TEXT,
    -- The last TOTP time step accepted: a code is usable once.
    totp_last_step      BIGINT  NOT NULL DEFAULT 0,
    failed_logins       BIGINT  NOT NULL DEFAULT 0,
    locked_until        BIGINT  NOT NULL DEFAULT 0,
    disabled            INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at          BIGINT  NOT NULL,
    password_changed_at BIGINT  NOT NULL,
    last_login_at       BIGINT
);

CREATE TABLE console_sessions (
    token_hash   TEXT   NOT NULL PRIMARY KEY,
    account      TEXT   NOT NULL,
    role         TEXT   NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    -- 'local' (a console account) or 'saml' (single sign-on).
    source       TEXT   NOT NULL,
    csrf_token   TEXT   NOT NULL,
    client       TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    account      TEXT   NOT NULL,
    label        TEXT   NOT NULL,
    role         TEXT   NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    token_hash   TEXT   NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
