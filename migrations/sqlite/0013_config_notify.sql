-- PostgreSQL's 0013 makes the configuration-version trigger NOTIFY the other nodes.
-- SQLite serves one node, which polls the version instead: nothing changes here; the
-- migration exists so that both backends count schema levels alike.
SELECT 1;
