-- Who a session's samples came from: the user that owned the spool file `turingwatch ingest`
-- loaded it from, as the file system says (not what the spool says of itself). A spool may
-- replace a stored session only when it comes from the same owner, so a user who can write the
-- shared spool directory cannot overwrite another user's session by reusing its session_id.
-- No row: a session stored otherwise (a job's own store, applied lines, or before this table).
-- IF NOT EXISTS: a store re-migrated from an older version keeps the table it has.

CREATE TABLE IF NOT EXISTS session_owners (
    session_id          VARCHAR PRIMARY KEY,
    owner               VARCHAR NOT NULL,      -- the spool file's owner: a user name, else its uid
    trusted             BOOLEAN NOT NULL,      -- root or store.service_user: may hold any user's session
    spool               VARCHAR,               -- the file's name when it was loaded
    loaded_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
