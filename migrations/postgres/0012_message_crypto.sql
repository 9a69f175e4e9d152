-- The crypto results of each logged message as bits, so that the console and
-- `smimegate log --crypto` filter and count in SQL (src/store/message_log.rs, CRYPTO
-- table): 1 signed, 2 encrypted, 4 decrypted, 8 signature-valid (every signature
-- layer valid), 16 signature-invalid (a layer neither valid nor unchecked), 32 other
-- crypto (kept encrypted, undecryptable, decryption failed, weak cipher, signature
-- unchecked). 0 = no crypto action. New rows get it from the writer; old rows from
-- their actions (a JSON array of words) here.
ALTER TABLE message_log ADD COLUMN crypto BIGINT NOT NULL DEFAULT 0;
UPDATE message_log SET crypto =
      (CASE WHEN actions LIKE '%"signed"%' THEN 1 ELSE 0 END)
    + (CASE WHEN actions LIKE '%"encrypted"%' OR actions LIKE '%"encrypted (%' THEN 2 ELSE 0 END)
    + (CASE WHEN actions LIKE '%"decrypted (%' THEN 4 ELSE 0 END)
    + (CASE WHEN actions LIKE '%"signature-valid"%'
             AND replace(actions, '"signature-valid"', '') NOT LIKE '%"signature-%' THEN 8 ELSE 0 END)
    + (CASE WHEN replace(replace(actions, '"signature-valid"', ''), '"signature-unchecked"', '')
             LIKE '%"signature-%' THEN 16 ELSE 0 END)
    + (CASE WHEN actions LIKE '%"kept-encrypted"%' OR actions LIKE '%"undecryptable:%'
             OR actions LIKE '%"decryption-failed"%' OR actions LIKE '%"weak-cipher %'
             OR actions LIKE '%"signature-unchecked"%' THEN 32 ELSE 0 END);
-- The address filter compares the sender exactly.
CREATE INDEX message_log_mail_from ON message_log(mail_from, received_at);
-- The audit log's filters: by actor, by time.
CREATE INDEX audit_log_actor ON audit_log(actor, at);
CREATE INDEX audit_log_at ON audit_log(at);
