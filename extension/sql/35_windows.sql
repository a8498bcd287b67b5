-- pgconductor: time windows of tasks (executions start only while their window is open).

-- Parses a task's window declaration: null, or a JSON array ["HH:MM", "HH:MM"] or
-- ["HH:MM", "HH:MM", "<IANA time zone>"] (default UTC) with different start and end.
-- Returns (start, end, timezone), all null for no window; raises PGC01 naming p_input.
create function pgconductor._parse_window(
    p_input text,
    p_value jsonb,
    out window_start time,
    out window_end time,
    out window_timezone text
)
language plpgsql
stable
set search_path = ''
as $$
declare
    v_problem text := 'must be null or ["HH:MM", "HH:MM"] or ["HH:MM", "HH:MM", "<IANA time zone>"]';
begin
    if p_value is null or p_value = 'null'::jsonb then
        return;
    end if;
    if pg_catalog.jsonb_typeof(p_value) <> 'array'
       or pg_catalog.jsonb_array_length(p_value) not in (2, 3)
       or exists (select 1 from pg_catalog.jsonb_array_elements(p_value) v
                  where pg_catalog.jsonb_typeof(v) <> 'string')
       or (p_value ->> 0) !~ '^([01][0-9]|2[0-3]):[0-5][0-9]$'
       or (p_value ->> 1) !~ '^([01][0-9]|2[0-3]):[0-5][0-9]$' then
        perform pgconductor._invalid(p_input, v_problem, p_value::text);
    end if;
    window_start := (p_value ->> 0)::time;
    window_end := (p_value ->> 1)::time;
    window_timezone := coalesce(p_value ->> 2, 'UTC');
    if window_start = window_end then
        perform pgconductor._invalid(p_input, 'start and end must differ (no window means always open)',
            p_value::text);
    end if;
    -- Only zone names of the tz database: abbreviations and POSIX offsets ('+02') would be
    -- read with surprising signs or without daylight saving time.
    if not exists (select 1 from pg_catalog.pg_timezone_names z where z.name = window_timezone) then
        perform pgconductor._invalid(p_input, format('unknown IANA time zone %L', window_timezone), p_value::text);
    end if;
end;
$$;

-- Returns p_at when the window (start, end, zone) is open at p_at, else the instant it
-- next opens. Windows with end < start cross midnight (22:00-06:00 is open at 23:00 and
-- at 05:00). Local times that do not exist on a daylight saving day open at the
-- instant Postgres maps them to.
create function pgconductor._window_opens_at(p_start time, p_end time, p_timezone text, p_at timestamptz)
returns timestamptz
language plpgsql
stable
set search_path = ''
as $$
declare
    v_local timestamp := p_at at time zone p_timezone;
    v_time time := v_local::time;
begin
    if p_start is null then
        return p_at;
    end if;
    if (p_start < p_end and v_time >= p_start and v_time < p_end)
       or (p_start > p_end and (v_time >= p_start or v_time < p_end)) then
        return p_at;
    end if;
    -- Closed: the next start is today's if it is still ahead, else tomorrow's.
    if v_time < p_start then
        return (v_local::date + p_start) at time zone p_timezone;
    end if;
    return (v_local::date + 1 + p_start) at time zone p_timezone;
end;
$$;
