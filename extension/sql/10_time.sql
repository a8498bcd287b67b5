-- pgconductor: the one clock.

-- Returns the database's current time for pgconductor: the fake time when one is
-- set and allowed (pgconductor.allow_fake_time = on), else the transaction time.
create function pgconductor.now()
returns timestamptz
language plpgsql
stable
set search_path = ''
as $$
declare
    v_fake timestamptz;
begin
    -- Production never reads the clock table: the setting is off there.
    if coalesce(pg_catalog.current_setting('pgconductor.allow_fake_time', true), 'off') <> 'on' then
        return pg_catalog.now();
    end if;
    select c.fake_time into v_fake from pgconductor._clock c;
    return coalesce(v_fake, pg_catalog.now());
end;
$$;
comment on function pgconductor.now() is
    'Current time for every pgconductor decision: the fake time if set and allowed, else now().';

-- Raises PGC02 unless fake time is allowed for this database (or session).
create function pgconductor._require_fake_time_allowed()
returns void
language plpgsql
stable
set search_path = ''
as $$
begin
    if coalesce(pg_catalog.current_setting('pgconductor.allow_fake_time', true), 'off') <> 'on' then
        raise exception using
            errcode = 'PGC02',
            message = 'pgconductor: fake time is not allowed in this database',
            detail = 'pgconductor.allow_fake_time is not on',
            hint = format('For a test database run: alter database %I set pgconductor.allow_fake_time = on',
                          pg_catalog.current_database());
    end if;
end;
$$;

-- Freezes pgconductor.now() at p_time for every connection of this database.
create function pgconductor.set_fake_time(p_time timestamptz)
returns timestamptz
language plpgsql
volatile
set search_path = ''
as $$
begin
    perform pgconductor._require_fake_time_allowed();
    if p_time is null then
        perform pgconductor._invalid('time', 'must not be null', null);
    end if;
    insert into pgconductor._clock (only_row, fake_time) values (true, p_time)
    on conflict (only_row) do update set fake_time = excluded.fake_time;
    return p_time;
end;
$$;
comment on function pgconductor.set_fake_time(timestamptz) is
    'Test only: freeze pgconductor.now() for every connection of this database; refused (PGC02) unless allowed.';

-- Returns pgconductor.now() to the real clock for every connection.
create function pgconductor.clear_fake_time()
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
    perform pgconductor._require_fake_time_allowed();
    delete from pgconductor._clock;
end;
$$;
comment on function pgconductor.clear_fake_time() is
    'Test only: return pgconductor.now() to the real clock; refused (PGC02) unless allowed.';
