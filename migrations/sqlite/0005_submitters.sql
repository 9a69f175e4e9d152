-- SMTP AUTH submitters (issue 9): the accounts that may authenticate on the
-- submission listener (SASL PLAIN/LOGIN after STARTTLS). Names are stored lower-case.
-- password_hash is an argon2id PHC string; the password itself is never stored.
-- may_send_as is a JSON array of addresses the submitter may send as (empty: it may
-- relay, but vouches for no address).
CREATE TABLE submitters (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT    NOT NULL UNIQUE,
    password_hash  TEXT    NOT NULL,
    may_send_as    TEXT    NOT NULL DEFAULT '[]',
    comment        TEXT    NOT NULL DEFAULT '',
    created_at     BIGINT  NOT NULL,
    password_changed_at BIGINT NOT NULL,
    disabled       INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1))
);
-- The relay caches what it reads per transaction: a change to a submitter (a new
-- password, a removal) must reach it at once.
CREATE TRIGGER submitters_insert_bumps_version AFTER INSERT ON submitters
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER submitters_update_bumps_version AFTER UPDATE ON submitters
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER submitters_delete_bumps_version AFTER DELETE ON submitters
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
