//! PostgreSQL diagnostics: query plans, unused indexes and tables read by sequential scans.
