-- Remote bridges (issue 12): enrolment tokens (by SHA-256 of the token), enrolled bridges,
-- and when each was last heard from.
CREATE TABLE warden.bridge_tokens (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.bridges (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.bridges_seen (key bytea PRIMARY KEY, value bytea NOT NULL);
