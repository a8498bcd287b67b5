-- pgconductor: errors and input checks shared by every entry point.
--
-- SQLSTATEs users can branch on:
--   PGC01  invalid input (detail names the input and its value)
--   PGC02  fake time is not allowed in this database
--   PGC03  the worker is not registered or its lease expired (register again)
--   0A000  feature not supported yet (standard code)

-- Raises PGC01 naming the bad input; never returns.
create function pgconductor._invalid(p_input text, p_problem text, p_value text)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
    raise exception using
        errcode = 'PGC01',
        message = format('pgconductor: invalid %s: %s', p_input, p_problem),
        detail = format('%s = %s', p_input, coalesce(p_value, 'null'));
end;
$$;

-- Raises PGC01 unless p_name is a usable task or queue name (non-empty, at most p_max bytes:
-- a queue name ends up in a NOTIFY channel name, which Postgres limits to 63 bytes).
create function pgconductor._check_name(p_input text, p_name text, p_max int)
returns void
language plpgsql
immutable
set search_path = ''
as $$
begin
    if p_name is null or pg_catalog.btrim(p_name) = '' then
        perform pgconductor._invalid(p_input, 'must be a non-empty string', p_name);
    elsif pg_catalog.octet_length(p_name) > p_max then
        perform pgconductor._invalid(p_input, format('must be at most %s bytes', p_max), p_name);
    end if;
end;
$$;

-- Returns the retention interval a JSON value asks for: null (absent) -> p_default,
-- false -> null (keep forever), 0 -> 0, {"days": N} -> N days (at most 100 years);
-- anything else raises PGC01.
create function pgconductor._retention(p_input text, p_value jsonb, p_default interval)
returns interval
language plpgsql
immutable
set search_path = ''
as $$
declare
    v_days numeric;
begin
    if p_value is null or p_value = 'null'::jsonb then
        return p_default;
    elsif p_value = 'false'::jsonb then
        return null;
    elsif p_value = '0'::jsonb then
        return interval '0';
    elsif pg_catalog.jsonb_typeof(p_value) = 'object'
          and (p_value - 'days') = '{}'::jsonb
          and pg_catalog.jsonb_typeof(p_value -> 'days') = 'number' then
        v_days := (p_value ->> 'days')::numeric;
        if v_days >= 0 and v_days <= 36500 then
            return pg_catalog.make_interval(secs => (v_days * 86400)::double precision);
        end if;
    end if;
    perform pgconductor._invalid(p_input, 'must be {"days": N} with 0 <= N <= 36500, 0, or false', p_value::text);
    return null;
end;
$$;

-- Returns when a finished execution of a task expires under its retention
-- (null: kept forever); unregistered tasks use the defaults (7 days, 30 days).
create function pgconductor._expires_at(p_task_name text, p_status text, p_finished_at timestamptz)
returns timestamptz
language sql
stable
set search_path = ''
as $$
    select p_finished_at + case
        when t.name is null then
            case when p_status = 'completed' then interval '7 days' else interval '30 days' end
        when p_status = 'completed' then t.remove_on_complete
        else t.remove_on_fail end
    from (select 1) one
    left join pgconductor._tasks t on t.name = p_task_name
$$;

-- Returns the max_attempts that applies to an execution: its own if set, else its
-- task's registered value, else 3.
create function pgconductor._max_attempts(p_task_name text, p_own int)
returns int
language sql
stable
set search_path = ''
as $$
    select coalesce(p_own, (select t.max_attempts from pgconductor._tasks t where t.name = p_task_name), 3)
$$;

-- Returns the advisory lock key that serializes enqueues of one (task, queue, dedupe key).
-- Keys fall into 1024 buckets, so one transaction never holds more than 1024 such locks
-- (a bulk call with many keys cannot exhaust the lock table); bulk calls take their
-- buckets in ascending order, so two of them cannot deadlock.
create function pgconductor._dedupe_lock(p_task_name text, p_queue text, p_dedupe_key text)
returns bigint
language sql
immutable
set search_path = ''
as $$
    select 7450000000 + (pg_catalog.hashtextextended(
        p_task_name || chr(31) || p_queue || chr(31) || p_dedupe_key, 0) & 1023)
$$;

-- True when a worker's JSON item names a run: a uuid string "id" and a "run" integer from 1
-- to 2147483647 (the token claim returned). Used by report, save_steps and invoke_children.
-- No `set search_path`: with one, Postgres would not inline it, and calling it per item
-- costs a 1,000-item report 7.5 ms instead of 3.5 ms (measured). Every name is schema-
-- qualified or a pg_catalog operator, which Postgres searches first anyway.
create function pgconductor._is_run_ref(p_item jsonb)
returns boolean
language sql
immutable
as $$
    select coalesce(
        pg_catalog.jsonb_typeof(p_item -> 'id') = 'string'
        and (p_item ->> 'id') ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
        and pg_catalog.jsonb_typeof(p_item -> 'run') = 'number'
        and case when (p_item ->> 'run') ~ '^[0-9]{1,10}$'
                 then (p_item ->> 'run')::bigint between 1 and 2147483647 else false end,
        false)
$$;
