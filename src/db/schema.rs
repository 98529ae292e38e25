//! The database's tables, and the migrations that make them.
//!
//! The version lives in `PRAGMA user_version`. [`migrate`] brings an older
//! file up to [`VERSION`], one step at a time, each in its own transaction;
//! a file from a newer inflight is refused (its tables may mean something
//! this one does not know).

use rusqlite::Connection;

use super::DbError;

/// The schema this build writes.
pub const VERSION: i64 = 4;

/// Each step takes the file from the version before it to its own.
const STEPS: [&str; 4] = [
    // 1: sessions, their final transcripts, the latest result per
    // operation, every run, and skip counters.
    "
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        feed INTEGER,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        ended_at REAL,
        last_seq INTEGER,
        generation INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX sessions_by_last_seen ON sessions(last_seen);
    CREATE TABLE transcripts (
        session TEXT NOT NULL,
        generation INTEGER NOT NULL,
        seq INTEGER,
        speaker TEXT,
        start REAL,
        end REAL,
        text TEXT NOT NULL,
        received_at REAL NOT NULL,
        PRIMARY KEY (session, generation)
    ) WITHOUT ROWID;
    CREATE TABLE results (
        session TEXT NOT NULL,
        op TEXT NOT NULL,
        run_id INTEGER NOT NULL,
        covered_generation INTEGER NOT NULL,
        body TEXT NOT NULL,
        model TEXT NOT NULL,
        processing_ms INTEGER NOT NULL,
        finished_at REAL NOT NULL,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (session, op)
    ) WITHOUT ROWID;
    CREATE TABLE runs (
        run_id INTEGER PRIMARY KEY,
        session TEXT NOT NULL,
        op TEXT NOT NULL,
        admitted_at REAL NOT NULL,
        follow_up INTEGER NOT NULL,
        outcome TEXT,
        duration_ms INTEGER,
        waited_ms INTEGER,
        error TEXT,
        covered_generation INTEGER,
        prompt_tokens INTEGER,
        completion_tokens INTEGER
    );
    CREATE INDEX runs_by_session ON runs(session, op, run_id);
    CREATE TABLE skips (
        session TEXT NOT NULL,
        op TEXT NOT NULL,
        skipped INTEGER NOT NULL,
        PRIMARY KEY (session, op)
    ) WITHOUT ROWID;
    ",
    // 2: a result whose answer the server cut at the token limit says so.
    "ALTER TABLE results ADD COLUMN truncated INTEGER NOT NULL DEFAULT 0;",
    // 3: webhook deliveries waiting (the newest per endpoint and slot),
    // and those given up.
    "
    CREATE TABLE outbox (
        endpoint TEXT NOT NULL,
        session TEXT NOT NULL,
        op TEXT NOT NULL,
        event TEXT NOT NULL,
        revision INTEGER NOT NULL,
        id TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (endpoint, session, op, event)
    ) WITHOUT ROWID;
    CREATE TABLE dead_letters (
        endpoint TEXT NOT NULL,
        id TEXT NOT NULL,
        event TEXT NOT NULL,
        session TEXT NOT NULL,
        op TEXT NOT NULL,
        revision INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        error TEXT NOT NULL,
        created_at REAL NOT NULL,
        died_at REAL NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX dead_letters_by_time ON dead_letters (died_at);
    ",
    // 4: of a run's and a result's prompt tokens, those the server read
    // from its cache; and what the tokens cost at the price table, in
    // billionths of its currency.
    "
    ALTER TABLE runs ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN cost_nanos INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE results ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE results ADD COLUMN cost_nanos INTEGER NOT NULL DEFAULT 0;
    ",
];

/// The file's schema version; fails on a file that is not a database.
pub fn version(conn: &Connection) -> Result<i64, rusqlite::Error> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Brings the file up to [`VERSION`]; refuses a newer one.
pub fn migrate(conn: &mut Connection, path: &str) -> Result<(), DbError> {
    let found = version(conn).map_err(|e| DbError::unreadable(path, e))?;
    if found > VERSION {
        return Err(DbError::Newer {
            path: path.into(),
            found,
            known: VERSION,
        });
    }
    for (at, step) in STEPS.iter().enumerate().skip(found as usize) {
        let to = at as i64 + 1;
        let tx = conn.transaction().map_err(|e| DbError::io(path, e))?;
        tx.execute_batch(step).map_err(|e| DbError::io(path, e))?;
        tx.pragma_update(None, "user_version", to)
            .map_err(|e| DbError::io(path, e))?;
        tx.commit().map_err(|e| DbError::io(path, e))?;
    }
    Ok(())
}
