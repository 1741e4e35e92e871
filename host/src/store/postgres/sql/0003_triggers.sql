-- Inbound triggers (issue 18): the triggers, their shared guard state (rate window, runs in
-- flight, recent subjects), the event ids remembered against replays, and stored bodies.
CREATE TABLE warden.triggers (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.trigger_state (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.trigger_replay (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE warden.trigger_bodies (key bytea PRIMARY KEY, value bytea NOT NULL);
