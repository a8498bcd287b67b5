-- pgconductor: privileges. Functions run with the caller's rights (no security definer);
-- see docs/roles.md for the grants of an enqueue-only role and a worker role.

-- Moving the clock is for test databases only; nobody but the owner by default.
revoke all on function pgconductor.set_fake_time(timestamptz) from public;
revoke all on function pgconductor.clear_fake_time() from public;
