-- pgconductor.now(): one clock for every decision; tests move it with
-- set_fake_time / clear_fake_time, refused (PGC02) unless fake time is allowed.
\i ../tests/sql/include/reset.sql
-- start from a real clock, whatever an earlier file left behind
select pgconductor.clear_fake_time();

-- without a fake time, now() is the transaction time
select pgconductor.now() = now() as real_time;

-- set_fake_time returns the time it set
select pgconductor.set_fake_time('2026-01-01 00:00:00+00') = '2026-01-01 00:00:00+00' as returns_time;

-- now() is the fake time from now on, also in later transactions
select pgconductor.now() = '2026-01-01 00:00:00+00' as fake_time;
select pgconductor.now() = '2026-01-01 00:00:00+00' as still_fake;

-- the fake time can be moved again (forward or back)
select pgconductor.set_fake_time('2026-01-01 00:01:30+00');
select pgconductor.now() - '2026-01-01 00:00:00+00'::timestamptz as moved_by;
select pgconductor.set_fake_time('2025-12-31 00:00:00+00');
select pgconductor.now() = '2025-12-31 00:00:00+00' as moved_back;

-- the fake time is shared by every connection: it is stored, not a session setting
select fake_time = '2025-12-31 00:00:00+00' as stored from pgconductor._clock;

-- a null time is invalid input (PGC01); the clock is unchanged
select pgconductor.set_fake_time(null);
select pgconductor.now() = '2025-12-31 00:00:00+00' as unchanged;

-- where fake time is not allowed, now() ignores the stored fake time ...
set pgconductor.allow_fake_time = off;
select pgconductor.now() = now() as real_time_when_off;

-- ... and set_fake_time and clear_fake_time are refused with PGC02
select pgconductor.set_fake_time('2026-01-01 00:00:00+00');
select pgconductor.clear_fake_time();
do $$
begin
    perform pgconductor.set_fake_time('2026-01-01 00:00:00+00');
    raise notice 'not refused';
exception when sqlstate 'PGC02' then
    raise notice 'set_fake_time refused with PGC02';
end;
$$;
do $$
begin
    perform pgconductor.clear_fake_time();
    raise notice 'not refused';
exception when sqlstate 'PGC02' then
    raise notice 'clear_fake_time refused with PGC02';
end;
$$;

-- the same holds when the setting is absent altogether
reset pgconductor.allow_fake_time;
select pgconductor.now() = now() as real_time_when_unset;
select pgconductor.set_fake_time('2026-01-01 00:00:00+00');

-- the refused calls changed nothing: allowed again, the old fake time is back
set pgconductor.allow_fake_time = on;
select pgconductor.now() = '2025-12-31 00:00:00+00' as fake_time_kept;

-- clear_fake_time returns to the real clock
select pgconductor.clear_fake_time();
select pgconductor.now() = now() as real_time_again;
select count(*) as clock_rows from pgconductor._clock;

-- clearing twice is harmless
select pgconductor.clear_fake_time();
select pgconductor.now() = now() as still_real;
