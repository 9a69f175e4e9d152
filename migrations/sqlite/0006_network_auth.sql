-- Networks on which the submission listener still requires SMTP AUTH (issue 9): a
-- network that may submit, but only as an authenticated submitter (1), or on its
-- address alone (0, as before).
ALTER TABLE relay_networks ADD COLUMN require_auth INTEGER NOT NULL DEFAULT 0;
