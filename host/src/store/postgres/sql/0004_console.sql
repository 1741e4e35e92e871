-- The web console (issue 15): sessions, keyed by the SHA-256 of the session id (the id
-- itself is never stored), shared by every server over the database.
CREATE TABLE warden.console_sessions (key bytea PRIMARY KEY, value bytea NOT NULL);
