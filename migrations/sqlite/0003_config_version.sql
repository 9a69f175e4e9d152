-- A counter bumped by every change to what the relay reads per transaction, so the
-- relay keeps that data in memory and reloads it the moment it changes (one cheap
-- query per transaction instead of ten).
CREATE TABLE config_version (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  BIGINT  NOT NULL
);
INSERT INTO config_version (id, version) VALUES (1, 0);
CREATE TRIGGER rules_insert_bumps_version AFTER INSERT ON rules
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER rules_update_bumps_version AFTER UPDATE ON rules
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER rules_delete_bumps_version AFTER DELETE ON rules
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER domains_insert_bumps_version AFTER INSERT ON domains
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER domains_update_bumps_version AFTER UPDATE ON domains
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER domains_delete_bumps_version AFTER DELETE ON domains
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER mailboxes_insert_bumps_version AFTER INSERT ON mailboxes
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER mailboxes_update_bumps_version AFTER UPDATE ON mailboxes
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER mailboxes_delete_bumps_version AFTER DELETE ON mailboxes
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER certificates_insert_bumps_version AFTER INSERT ON certificates
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER certificates_update_bumps_version AFTER UPDATE ON certificates
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER certificates_delete_bumps_version AFTER DELETE ON certificates
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER keys_insert_bumps_version AFTER INSERT ON keys
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER keys_update_bumps_version AFTER UPDATE ON keys
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER keys_delete_bumps_version AFTER DELETE ON keys
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER relay_settings_insert_bumps_version AFTER INSERT ON relay_settings
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER relay_settings_update_bumps_version AFTER UPDATE ON relay_settings
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER relay_settings_delete_bumps_version AFTER DELETE ON relay_settings
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER relay_networks_insert_bumps_version AFTER INSERT ON relay_networks
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER relay_networks_update_bumps_version AFTER UPDATE ON relay_networks
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER relay_networks_delete_bumps_version AFTER DELETE ON relay_networks
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
END;
