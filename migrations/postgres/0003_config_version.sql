-- A counter bumped by every change to what the relay reads per transaction, so the
-- relay keeps that data in memory and reloads it the moment it changes (one cheap
-- query per transaction instead of ten); it is shared by every node.
CREATE TABLE config_version (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  BIGINT  NOT NULL
);
INSERT INTO config_version (id, version) VALUES (1, 0);
CREATE FUNCTION bump_config_version() RETURNS trigger AS $$
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER rules_bumps_version AFTER INSERT OR UPDATE OR DELETE ON rules
    FOR EACH STATEMENT EXECUTE FUNCTION bump_config_version();
CREATE TRIGGER domains_bumps_version AFTER INSERT OR UPDATE OR DELETE ON domains
    FOR EACH STATEMENT EXECUTE FUNCTION bump_config_version();
CREATE TRIGGER mailboxes_bumps_version AFTER INSERT OR UPDATE OR DELETE ON mailboxes
    FOR EACH STATEMENT EXECUTE FUNCTION bump_config_version();
CREATE TRIGGER certificates_bumps_version AFTER INSERT OR UPDATE OR DELETE ON certificates
    FOR EACH STATEMENT EXECUTE FUNCTION bump_config_version();
CREATE TRIGGER keys_bumps_version AFTER INSERT OR UPDATE OR DELETE ON keys
    FOR EACH STATEMENT EXECUTE FUNCTION bump_config_version();
CREATE TRIGGER relay_settings_bumps_version AFTER INSERT OR UPDATE OR DELETE ON relay_settings
    FOR EACH STATEMENT EXECUTE FUNCTION bump_config_version();
CREATE TRIGGER relay_networks_bumps_version AFTER INSERT OR UPDATE OR DELETE ON relay_networks
    FOR EACH STATEMENT EXECUTE FUNCTION bump_config_version();
