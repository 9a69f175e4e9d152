-- Several nodes: a change to what the relay caches is pushed to every node at once.
-- The trigger that bumps the configuration version also sends the new version on the
-- channel smimegate_config (delivered at commit); each serving node LISTENs on it.
CREATE OR REPLACE FUNCTION bump_config_version() RETURNS trigger AS $$
DECLARE
    new_version BIGINT;
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1
        RETURNING version INTO new_version;
    PERFORM pg_notify('smimegate_config', new_version::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
