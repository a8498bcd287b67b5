-- Time windows: registration parses and refuses windows; claims skip executions of tasks
-- whose window is closed (moving them to waiting until it opens); a release while the
-- window is closed waits for the next opening; checkpoint reports a closed window.
\i ../tests/sql/include/reset.sql

-- the opening instant of a window: the same instant when open, else the next start
select t.at, pgconductor._window_opens_at(w.s, w.e, w.tz, t.at) as opens_at, w.s, w.e, w.tz
from (values ('09:00'::time, '17:00'::time, 'UTC'), ('22:00', '06:00', 'UTC'),
             ('09:00', '17:00', 'Europe/Berlin')) w(s, e, tz)
cross join (values ('2030-01-01 07:30+00'::timestamptz), ('2030-01-01 09:00+00'), ('2030-01-01 16:59+00'),
                   ('2030-01-01 17:00+00'), ('2030-01-01 23:00+00'), ('2030-01-02 05:59+00'),
                   ('2030-01-02 06:00+00')) t(at)
order by w.tz, w.s, t.at;
-- the day daylight saving time starts in Berlin (02:00 -> 03:00): a 02:30 start opens at 03:30
select pgconductor._window_opens_at('02:30', '04:00', 'Europe/Berlin', '2030-03-31 00:00+00');

-- registration: good and bad windows
select pgconductor.register_worker('00000000-0000-0000-0000-000000000001', 'w',
    '[{"name": "office", "window": ["09:00", "17:00"]},
      {"name": "night", "window": ["22:00", "06:00", "Europe/Berlin"]},
      {"name": "always"}]', 2000000000);
select name, window_start, window_end, window_timezone from pgconductor._tasks order by name;
select pgconductor.register_worker(gen_random_uuid(), 'w', '[{"name": "x", "window": ["09:00"]}]');
select pgconductor.register_worker(gen_random_uuid(), 'w', '[{"name": "x", "window": ["09:00", "9:00"]}]');
select pgconductor.register_worker(gen_random_uuid(), 'w', '[{"name": "x", "window": ["09:00", "09:00"]}]');
select pgconductor.register_worker(gen_random_uuid(), 'w', '[{"name": "x", "window": ["09:00", "10:00", "Nowhere/Town"]}]');
select pgconductor.register_worker(gen_random_uuid(), 'w', '[{"name": "x", "window": "09:00-10:00"}]');
select count(*) as tasks from pgconductor._tasks;

-- at 08:00 UTC (09:00 in Berlin) both windows are closed: a claim hands out only the
-- task without a window, and the others wait for their openings
select pgconductor.set_fake_time('2030-01-01 08:00+00');
select pgconductor.invoke('office') as office \gset
select pgconductor.invoke('night') as night \gset
select pgconductor.invoke('always') as always \gset
select task_name from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', null, 10);
select task_name, status, run_at, attempts from pgconductor._executions where id in (:'office', :'night') order by task_name;
-- a dedupe call for a waiting (never started) execution replaces it like a pending one
select pgconductor.invoke('office', '{"v": 2}', dedupe_key => 'k') as k1 \gset
select count(*) from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', null, 10);
select pgconductor.invoke('office', '{"v": 3}', dedupe_key => 'k') = :'k1' as same_id;
select status, payload from pgconductor._executions where id = :'k1';
-- at 09:00 the office window opens: its executions are handed out
select pgconductor.set_fake_time('2030-01-01 09:00+00');
select task_name, payload, attempt from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', null, 10)
order by payload::text;

-- checkpoint: open window, then closed (with the next opening), then a release waits for it
select pgconductor.invoke('office') as late \gset
select attempt, run from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default') \gset
select pgconductor.checkpoint('00000000-0000-0000-0000-000000000001', :'late', :run);
select pgconductor.set_fake_time('2030-01-01 17:30+00');
select pgconductor.checkpoint('00000000-0000-0000-0000-000000000001', :'late', :run);
select pgconductor.checkpoint('00000000-0000-0000-0000-000000000001', :'late', :run + 1);
select pgconductor.report('00000000-0000-0000-0000-000000000001',
    jsonb_build_array(jsonb_build_object('id', :'late', 'run', :run, 'outcome', 'released')));
select status, run_at, attempts from pgconductor._executions where id = :'late';
-- the night window (22:00-06:00 Berlin = 21:00-05:00 UTC) opens at 21:00 UTC
select pgconductor.set_fake_time('2030-01-01 21:00+00');
select task_name from pgconductor.claim('00000000-0000-0000-0000-000000000001', 'default', null, 10);
select pgconductor.clear_fake_time();
