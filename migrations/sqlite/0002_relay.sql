-- Relay settings the operator changes at run time (smarthost), and the internal
-- networks allowed to relay outbound. Read per SMTP transaction: no restart needed.
CREATE TABLE relay_settings (
    name        TEXT    PRIMARY KEY,
    value       TEXT    NOT NULL,
    updated_at  BIGINT  NOT NULL
);
CREATE TABLE relay_networks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    cidr        TEXT    NOT NULL UNIQUE,
    comment     TEXT    NOT NULL DEFAULT '',
    created_at  BIGINT  NOT NULL
);
CREATE INDEX message_log_direction ON message_log(direction, received_at);
