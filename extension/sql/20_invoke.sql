-- pgconductor: enqueue (invoke, invoke_many) with dedupe keys.

-- Returns the NOTIFY channel workers of a queue LISTEN on.
create function pgconductor.queue_channel(p_queue text)
returns text
language sql
immutable
set search_path = ''
as $$ select 'pgconductor.q.' || p_queue $$;
comment on function pgconductor.queue_channel(text) is
    'The LISTEN/NOTIFY channel of a queue: one notification per enqueueing statement.';

-- Raises PGC01 for any invalid enqueue argument; writes nothing.
-- p_prefix names the input inside a bulk call (e.g. 'items[3].').
create function pgconductor._check_invoke(
    p_prefix text,
    p_payload jsonb,
    p_dedupe_key text,
    p_throttle_seconds int,
    p_debounce_seconds int,
    p_debounce_max_wait_seconds int,
    p_run_at timestamptz
)
returns void
language plpgsql
immutable
set search_path = ''
as $$
begin
    if p_payload is null or pg_catalog.jsonb_typeof(p_payload) <> 'object' then
        perform pgconductor._invalid(p_prefix || 'payload', 'must be a JSON object', p_payload::text);
    end if;
    if p_dedupe_key is not null and p_dedupe_key = '' then
        perform pgconductor._invalid(p_prefix || 'dedupe_key', 'must be null or a non-empty string', '''''');
    end if;
    if p_throttle_seconds is not null and p_debounce_seconds is not null then
        perform pgconductor._invalid(p_prefix || 'throttle_seconds',
            'throttle and debounce cannot be used together', p_throttle_seconds::text);
    end if;
    if p_debounce_max_wait_seconds is not null and p_debounce_seconds is null then
        perform pgconductor._invalid(p_prefix || 'debounce_max_wait_seconds',
            'needs debounce_seconds', p_debounce_max_wait_seconds::text);
    end if;
    if p_throttle_seconds is not null and p_throttle_seconds <= 0 then
        perform pgconductor._invalid(p_prefix || 'throttle_seconds', 'must be positive', p_throttle_seconds::text);
    end if;
    if p_debounce_seconds is not null and p_debounce_seconds <= 0 then
        perform pgconductor._invalid(p_prefix || 'debounce_seconds', 'must be positive', p_debounce_seconds::text);
    end if;
    if p_throttle_seconds is not null and p_run_at is not null then
        perform pgconductor._invalid(p_prefix || 'run_at',
            'cannot be combined with throttle (the window counts from the call)', p_run_at::text);
    end if;
    if p_debounce_seconds is not null and p_run_at is not null then
        perform pgconductor._invalid(p_prefix || 'run_at', 'cannot be combined with debounce (debounce sets it)',
            p_run_at::text);
    end if;
    if p_debounce_max_wait_seconds is not null and p_debounce_max_wait_seconds <= 0 then
        perform pgconductor._invalid(p_prefix || 'debounce_max_wait_seconds', 'must be positive',
            p_debounce_max_wait_seconds::text);
    end if;
end;
$$;

-- Resolves the queue of a task: the explicit queue, else the registered task's
-- queue, else 'default'. Raises PGC01 for a bad task or queue name.
create function pgconductor._task_queue(p_task_name text, p_queue text)
returns text
language plpgsql
stable
set search_path = ''
as $$
declare
    v_queue text;
begin
    perform pgconductor._check_name('task_name', p_task_name, 200);
    if p_queue is not null then
        perform pgconductor._check_name('queue', p_queue, 48);
        return p_queue;
    end if;
    select t.queue into v_queue from pgconductor._tasks t where t.name = p_task_name;
    return coalesce(v_queue, 'default');
end;
$$;

-- Inserts one pending execution (seq: insertion order, next in line when null; a child
-- names its parent and the parent's step); returns its id.
create function pgconductor._insert_execution(
    p_task_name text, p_queue text, p_payload jsonb, p_dedupe_key text, p_priority int,
    p_run_at timestamptz, p_now timestamptz, p_seq bigint, p_debounce_key text,
    p_parent_id uuid default null, p_parent_step text default null
)
returns uuid
language sql
volatile
set search_path = ''
as $$
    insert into pgconductor._executions
        (seq, task_name, queue, payload, priority, run_at, created_at, dedupe_key, debounce_key,
         parent_id, parent_step)
    values
        (coalesce(p_seq, pg_catalog.nextval('pgconductor._executions_seq')), p_task_name, p_queue, p_payload,
         p_priority, p_run_at, p_now, p_dedupe_key, p_debounce_key, p_parent_id, p_parent_step)
    returning id
$$;

-- Enqueues one validated execution applying the dedupe rules of SPEC §3:
-- a pending one with the key is replaced; one in progress (running/waiting) gets a
-- new pending successor; a finished one is returned as is. Calls with the same key
-- are serialized by a transaction advisory lock. p_seq fixes the insertion order (bulk
-- calls); a replaced pending execution keeps its place. Does not notify.
create function pgconductor._enqueue(
    p_task_name text,
    p_queue text,
    p_payload jsonb,
    p_dedupe_key text,
    p_priority int,
    p_run_at timestamptz,
    p_now timestamptz,
    p_seq bigint default null
)
returns uuid
language plpgsql
volatile
set search_path = ''
as $$
declare
    v_id uuid;
    v_status text;
begin
    if p_dedupe_key is not null then
        perform pgconductor._lock_key(p_task_name, p_queue, p_dedupe_key);

        -- A pending execution with the key takes the new payload, priority and run_at.
        -- The status re-check makes a concurrent claim win: then we queue a successor.
        -- One that waits for its task's window to open has never started: it counts as pending.
        update pgconductor._executions e
        set payload = p_payload, priority = p_priority, run_at = coalesce(p_run_at, p_now), status = 'pending'
        where e.id = (
                select p.id from pgconductor._executions p
                where p.task_name = p_task_name and p.queue = p_queue
                  and p.dedupe_key = p_dedupe_key
                  and (p.status = 'pending' or p.status = 'waiting' and p.started_at is null)
                order by p.seq desc
                limit 1)
          and (e.status = 'pending' or e.status = 'waiting' and e.started_at is null)
        returning e.id into v_id;
        if v_id is not null then
            return v_id;
        end if;

        -- In progress wins over finished; the newest finished one is the answer.
        select e.id, e.status into v_id, v_status
        from pgconductor._executions e
        where e.task_name = p_task_name and e.queue = p_queue
          and e.dedupe_key = p_dedupe_key and e.status <> 'pending'
        order by e.status in ('running', 'waiting') desc, e.seq desc
        limit 1;
        if v_id is not null and v_status not in ('running', 'waiting') then
            return v_id;
        end if;
    end if;

    return pgconductor._insert_execution(p_task_name, p_queue, p_payload, p_dedupe_key, p_priority,
        coalesce(p_run_at, p_now), p_now, p_seq, null);
end;
$$;

-- Enqueues one execution (SPEC §2); returns its id. Refuses bad input (PGC01) before writing.
-- Notifies the queue's channel (Postgres sends one notification per transaction and channel).
create function pgconductor.invoke(
    task_name text,
    payload jsonb default '{}',
    queue text default null,
    dedupe_key text default null,
    priority int default 0,
    run_at timestamptz default null,
    throttle_seconds int default null,
    debounce_seconds int default null,
    debounce_max_wait_seconds int default null
)
returns uuid
language plpgsql
volatile
set search_path = ''
as $$
declare
    v_queue text;
    v_id uuid;
begin
    v_queue := pgconductor._task_queue(invoke.task_name, invoke.queue);
    perform pgconductor._check_invoke('', invoke.payload, invoke.dedupe_key,
        invoke.throttle_seconds, invoke.debounce_seconds, invoke.debounce_max_wait_seconds, invoke.run_at);
    v_id := pgconductor._enqueue_any(invoke.task_name, v_queue, invoke.payload, invoke.dedupe_key,
        coalesce(invoke.priority, 0), invoke.run_at, pgconductor.now(), null,
        invoke.throttle_seconds, invoke.debounce_seconds, invoke.debounce_max_wait_seconds);
    if v_id is not null then
        perform pg_catalog.pg_notify(pgconductor.queue_channel(v_queue), '');
    end if;
    return v_id;
end;
$$;
comment on function pgconductor.invoke(text, jsonb, text, text, int, timestamptz, int, int, int) is
    'Enqueue one execution; dedupe_key rules of SPEC §3; returns its id. Bad input raises PGC01 and writes nothing.';

-- One item of invoke_many, parsed.
create type pgconductor._invoke_item as (
    ord bigint,
    id uuid,
    seq bigint,
    payload jsonb,
    dedupe_key text,
    priority int,
    run_at timestamptz,
    throttle_seconds int,
    debounce_seconds int,
    debounce_max_wait_seconds int
);

-- True when every typed value of an invoke_many item casts (priority and flow-control
-- seconds to int, run_at to timestamptz). Used only to name the bad item in an error.
create function pgconductor._item_castable(p_item jsonb)
returns boolean
language plpgsql
stable
set search_path = ''
as $$
begin
    perform (p_item ->> 'priority')::int, (p_item ->> 'run_at')::timestamptz,
            (p_item ->> 'throttle_seconds')::int, (p_item ->> 'debounce_seconds')::int,
            (p_item ->> 'debounce_max_wait_seconds')::int;
    return true;
exception
    when invalid_text_representation or invalid_datetime_format or datetime_field_overflow
         or numeric_value_out_of_range then
        return false;
end;
$$;

-- Parses and validates the items of invoke_many, giving each its seq (and plain items
-- their id) in item order; raises PGC01 naming the first bad item.
create function pgconductor._parse_items(p_items jsonb)
returns pgconductor._invoke_item[]
language plpgsql
volatile
set search_path = ''
as $$
declare
    v_bad record;
    v_items pgconductor._invoke_item[];
    v_item pgconductor._invoke_item;
begin
    if p_items is null or pg_catalog.jsonb_typeof(p_items) <> 'array' then
        perform pgconductor._invalid('items', 'must be a JSON array of objects', p_items::text);
    end if;

    -- Shapes first, so a cast error never hides which item is wrong.
    select e.ord, e.v, x.problem into v_bad
    from pg_catalog.jsonb_array_elements(p_items) with ordinality as e(v, ord)
    cross join lateral (select case
        when pg_catalog.jsonb_typeof(e.v) <> 'object' then 'must be a JSON object'
        when (e.v - '{payload,dedupe_key,priority,run_at,throttle_seconds,debounce_seconds,debounce_max_wait_seconds}'::text[])
             <> '{}'::jsonb then 'has unknown keys ' || (select pg_catalog.string_agg(k, ', ')
                 from pg_catalog.jsonb_object_keys(e.v - '{payload,dedupe_key,priority,run_at,throttle_seconds,debounce_seconds,debounce_max_wait_seconds}'::text[]) k)
        when pg_catalog.jsonb_typeof(e.v -> 'payload') <> 'object' then 'payload must be a JSON object'
        when pg_catalog.jsonb_typeof(e.v -> 'dedupe_key') not in ('string', 'null') then 'dedupe_key must be a string'
        when e.v ->> 'dedupe_key' = '' then 'dedupe_key must be null or a non-empty string'
        when pg_catalog.jsonb_typeof(e.v -> 'priority') not in ('number', 'null') then 'priority must be an integer'
        when pg_catalog.jsonb_typeof(e.v -> 'run_at') not in ('string', 'null') then 'run_at must be a timestamp string'
        end as problem) x
    where x.problem is not null
    order by e.ord
    limit 1;
    if found then
        perform pgconductor._invalid(format('items[%s]', v_bad.ord - 1), v_bad.problem, v_bad.v::text);
    end if;

    begin
        -- Ids (plain items) and insertion order (seq) are assigned here, in item order: the
        -- function scan yields items in array order.
        select pg_catalog.array_agg(row(r.ord,
                   case when r.dedupe_key is null and r.throttle_seconds is null and r.debounce_seconds is null
                        then pg_catalog.gen_random_uuid() end,
                   pg_catalog.nextval('pgconductor._executions_seq'), coalesce(r.payload, '{}'), r.dedupe_key,
                   coalesce(r.priority, 0), r.run_at, r.throttle_seconds, r.debounce_seconds,
                   r.debounce_max_wait_seconds)::pgconductor._invoke_item order by r.ord)
        into v_items
        from rows from (pg_catalog.jsonb_to_recordset(p_items) as (
                payload jsonb, dedupe_key text, priority int, run_at timestamptz, throttle_seconds int,
                debounce_seconds int, debounce_max_wait_seconds int))
            with ordinality as r(payload, dedupe_key, priority, run_at, throttle_seconds,
                                 debounce_seconds, debounce_max_wait_seconds, ord);
    exception
        when invalid_text_representation or invalid_datetime_format or datetime_field_overflow
             or numeric_value_out_of_range then
            -- Error path only: find the first item whose values do not cast.
            select e.ord, e.v into v_bad
            from pg_catalog.jsonb_array_elements(p_items) with ordinality as e(v, ord)
            where not pgconductor._item_castable(e.v)
            order by e.ord limit 1;
            perform pgconductor._invalid(format('items[%s]', coalesce(v_bad.ord - 1, 0)),
                'a value has the wrong type: ' || sqlerrm, v_bad.v::text);
    end;

    -- Flow-control options need the full check; plain items passed the shape check above.
    for v_item in
        select * from pg_catalog.unnest(v_items) i
        where i.throttle_seconds is not null or i.debounce_seconds is not null
           or i.debounce_max_wait_seconds is not null
    loop
        perform pgconductor._check_invoke(format('items[%s].', v_item.ord - 1), v_item.payload, v_item.dedupe_key,
            v_item.throttle_seconds, v_item.debounce_seconds, v_item.debounce_max_wait_seconds, v_item.run_at);
    end loop;
    return coalesce(v_items, '{}');
end;
$$;

-- Enqueues many executions of one task in one call (one transaction); returns their
-- ids in item order. Items without a dedupe key are inserted by one statement; items
-- with a key follow the dedupe rules, and repeated keys collapse to the last item
-- (every item with that key returns the same id). Nothing is written if any item is bad.
create function pgconductor.invoke_many(task_name text, items jsonb, queue text default null)
returns setof uuid
language plpgsql
volatile
set search_path = ''
as $$
declare
    v_queue text;
    v_items pgconductor._invoke_item[];
    v_now timestamptz := pgconductor.now();
    v_keys text[] := '{}';
    v_ids uuid[] := '{}';
    v_ords bigint[] := '{}';
    v_flow_ids uuid[] := '{}';
    v_debounce_keys text[] := '{}';
    v_debounce_ids uuid[] := '{}';
    v_special boolean;
    v_id uuid;
    v_last record;
begin
    v_queue := pgconductor._task_queue(invoke_many.task_name, invoke_many.queue);
    v_items := pgconductor._parse_items(invoke_many.items);

    -- Plain items: one insert. Their ids and seqs (insertion order = item order, keyed
    -- items included) were assigned by _parse_items.
    insert into pgconductor._executions
        (id, seq, task_name, queue, payload, priority, run_at, created_at)
    select i.id, i.seq, invoke_many.task_name, v_queue, i.payload, i.priority,
           coalesce(i.run_at, v_now), v_now
    from pg_catalog.unnest(v_items) i
    where i.id is not null;

    -- Keyed and flow-control items. Every lock bucket is taken first, in ascending order,
    -- so two bulk calls cannot deadlock; seq already fixes the insertion order.
    v_special := exists (select 1 from pg_catalog.unnest(v_items) i where i.id is null);
    if v_special then
        perform pgconductor._lock_key(invoke_many.task_name, v_queue, b.key)
        from (select distinct on (pgconductor._dedupe_lock(invoke_many.task_name, v_queue, coalesce(i.dedupe_key, '')))
                     coalesce(i.dedupe_key, '') as key
              from pg_catalog.unnest(v_items) i where i.id is null
              order by pgconductor._dedupe_lock(invoke_many.task_name, v_queue, coalesce(i.dedupe_key, ''))) b;
    end if;
    -- Items of one call share one instant, so per key they collapse: plain keyed items
    -- and debounced items to their last item (every item of the key gets its id), and
    -- throttled items to their first item (the others are inside its window: null).
    for v_last in
        select * from (
            select distinct on (i.dedupe_key) i.*
            from pg_catalog.unnest(v_items) i
            where i.dedupe_key is not null and i.throttle_seconds is null and i.debounce_seconds is null
            order by i.dedupe_key, i.ord desc) k
        union all
        select * from (
            select distinct on (coalesce(i.dedupe_key, '')) i.*
            from pg_catalog.unnest(v_items) i
            where i.debounce_seconds is not null
            order by coalesce(i.dedupe_key, ''), i.ord desc) d
        union all
        select * from (
            select distinct on (coalesce(i.dedupe_key, '')) i.*
            from pg_catalog.unnest(v_items) i
            where i.throttle_seconds is not null
            order by coalesce(i.dedupe_key, ''), i.ord) t
        order by ord
    loop
        v_id := pgconductor._enqueue_any(invoke_many.task_name, v_queue, v_last.payload, v_last.dedupe_key,
            v_last.priority, v_last.run_at, v_now, v_last.seq,
            v_last.throttle_seconds, v_last.debounce_seconds, v_last.debounce_max_wait_seconds);
        if v_last.throttle_seconds is not null then
            v_ords := v_ords || v_last.ord;
            v_flow_ids := v_flow_ids || v_id;
        elsif v_last.debounce_seconds is not null then
            v_debounce_keys := v_debounce_keys || coalesce(v_last.dedupe_key, '');
            v_debounce_ids := v_debounce_ids || v_id;
        else
            v_keys := v_keys || v_last.dedupe_key;
            v_ids := v_ids || v_id;
        end if;
    end loop;

    if pg_catalog.cardinality(v_items) > 0 then
        perform pg_catalog.pg_notify(pgconductor.queue_channel(v_queue), '');
    end if;

    if not v_special then
        return query select i.id from pg_catalog.unnest(v_items) i;  -- already in item order
        return;
    end if;
    return query
        select coalesce(i.id, case
                   when i.throttle_seconds is not null then f.id
                   when i.debounce_seconds is not null then d.id
                   else k.id end)
        from pg_catalog.unnest(v_items) i
        left join unnest(v_ords, v_flow_ids) as f(ord, id) on f.ord = i.ord
        left join unnest(v_debounce_keys, v_debounce_ids) as d(key, id)
            on d.key = coalesce(i.dedupe_key, '') and i.debounce_seconds is not null
        left join unnest(v_keys, v_ids) as k(key, id)
            on k.key = i.dedupe_key and i.throttle_seconds is null and i.debounce_seconds is null
        order by i.ord;
end;
$$;
comment on function pgconductor.invoke_many(text, jsonb, text) is
    'Enqueue many executions of one task in one transaction; ids in item order; repeated dedupe keys collapse to the last item.';
