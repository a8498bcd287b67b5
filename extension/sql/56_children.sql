-- pgconductor: child executions (ctx.invoke) and how their outcomes reach their parents.

-- Starts (once per parent and step) a child execution of a running execution held by this
-- worker, and hands the parent back as waiting until the child finishes, or at most
-- p_timeout_ms after the child was created. Returns
--   {"held": false}                       the parent is not this worker's any more;
--   {"held": true, "cancel_reason": ...}  the parent's cancellation was requested;
--   {"held": true, "outcome": {...}}      the step is settled: {"child_id", "status":
--                                         completed|failed|cancelled|timeout, "result", "error"};
--   {"held": true, "waiting": true, "child_id": ...}  the parent now waits (not an attempt);
--                                         also the answer to the same call sent again after
--                                         its answer was lost (so the call is idempotent).
-- The child gets the parent's priority, and p_queue, else its task's registered queue,
-- else 'default'. Bad input raises PGC01 and writes nothing.
create function pgconductor.invoke_child(
    p_worker_id uuid,
    p_execution_id uuid,
    p_run int,
    p_step text,
    p_task_name text,
    p_payload jsonb default '{}',
    p_timeout_ms bigint default null,
    p_queue text default null
)
returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
declare
    v_now timestamptz := pgconductor.now();
    v_parent record;
    v_outcome jsonb;
    v_child_id uuid;
    v_child_created timestamptz;
    v_queue text;
begin
    perform pgconductor._check_name('step', p_step, 200);
    v_queue := pgconductor._task_queue(p_task_name, p_queue);
    perform pgconductor._check_invoke('', p_payload, null, null, null, null, null);
    if p_timeout_ms is not null and (p_timeout_ms <= 0 or p_timeout_ms > 3153600000000) then
        perform pgconductor._invalid('timeout_ms', 'must be null or a positive number of milliseconds',
            p_timeout_ms::text);
    end if;

    select e.cancel_reason, e.priority into v_parent
    from pgconductor._executions e
    where e.id = p_execution_id and e.status = 'running' and e.worker_id = p_worker_id
      and e.claims = p_run
    for update;
    if not found then
        -- The same call again (its answer was lost with a connection): this run already
        -- started the child and handed the execution back (no claim since: same token).
        select c.id into v_child_id
        from pgconductor._executions e
        join pgconductor._executions c on c.parent_id = e.id and c.parent_step = p_step
        where e.id = p_execution_id and e.claims = p_run and e.status in ('waiting', 'pending');
        if found then
            return pg_catalog.jsonb_build_object('held', true, 'waiting', true, 'child_id', v_child_id);
        end if;
        return pg_catalog.jsonb_build_object('held', false);
    end if;
    if v_parent.cancel_reason is not null then
        return pg_catalog.jsonb_build_object('held', true, 'cancel_reason', v_parent.cancel_reason);
    end if;
    select s.result into v_outcome from pgconductor._steps s
    where s.execution_id = p_execution_id and s.name = p_step;
    if found then
        return pg_catalog.jsonb_build_object('held', true, 'outcome', v_outcome);
    end if;

    select c.id, c.created_at into v_child_id, v_child_created
    from pgconductor._executions c
    where c.parent_id = p_execution_id and c.parent_step = p_step;
    if not found then
        v_child_id := pgconductor._insert_execution(p_task_name, v_queue, p_payload, null, v_parent.priority,
            v_now, v_now, null, null, p_execution_id, p_step);
        v_child_created := v_now;
        perform pg_catalog.pg_notify(pgconductor.queue_channel(v_queue), '');
    end if;

    -- A timeout that has passed settles the step for good (the child keeps running).
    if p_timeout_ms is not null
       and v_now >= v_child_created + pg_catalog.make_interval(secs => p_timeout_ms / 1000.0) then
        insert into pgconductor._steps (execution_id, name, result, created_at)
        values (p_execution_id, p_step, pg_catalog.jsonb_build_object(
                    'child_id', v_child_id, 'status', 'timeout', 'result', null, 'error', null), v_now)
        on conflict (execution_id, name) do nothing;
        select s.result into v_outcome from pgconductor._steps s
        where s.execution_id = p_execution_id and s.name = p_step;
        return pg_catalog.jsonb_build_object('held', true, 'outcome', v_outcome);
    end if;

    -- The child was created in this transaction, or is still unfinished (a finished child
    -- has written the step): nobody can wake the parent before it waits.
    update pgconductor._executions e
    set status = 'waiting', attempts = e.attempts - 1, worker_id = null, wait_step = p_step,
        run_at = case when p_timeout_ms is null then 'infinity'::timestamptz
                      else v_child_created + pg_catalog.make_interval(secs => p_timeout_ms / 1000.0) end
    where e.id = p_execution_id;
    return pg_catalog.jsonb_build_object('held', true, 'waiting', true, 'child_id', v_child_id);
end;
$$;
comment on function pgconductor.invoke_child(uuid, uuid, int, text, text, jsonb, bigint, text) is
    'Worker: start a child execution once per (parent, step) and make the parent wait for it (or return the settled outcome).';

-- invoke_child for many parents in one call (the Python worker batches its handlers'
-- children through it): p_items is [{"id", "run", "step", "task_name", "payload",
-- "timeout_ms", "queue"}, ...]; returns invoke_child's answers in item order. Parents
-- are handled in id order (the order _settle_children locks them). A bad item raises
-- PGC01 naming it, and nothing is written.
create function pgconductor.invoke_children(p_worker_id uuid, p_items jsonb)
returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
declare
    v_bad record;
    v_item record;
    v_answers jsonb[];
begin
    if p_items is null or pg_catalog.jsonb_typeof(p_items) <> 'array' then
        perform pgconductor._invalid('items', 'must be a JSON array', p_items::text);
    end if;
    select x.ord, x.v into v_bad
    from pg_catalog.jsonb_array_elements(p_items) with ordinality x(v, ord)
    where pg_catalog.jsonb_typeof(x.v) <> 'object'
       or not pgconductor._is_run_ref(x.v)
       or pg_catalog.jsonb_typeof(x.v -> 'timeout_ms') not in ('number', 'null')
       or (x.v ->> 'timeout_ms') !~ '^[0-9]{1,15}$'
    order by x.ord limit 1;
    if found then
        perform pgconductor._invalid(format('items[%s]', v_bad.ord - 1),
            'must be {"id": uuid, "run": int, "step", "task_name", "payload", "timeout_ms": int|null, "queue"}',
            v_bad.v::text);
    end if;
    v_answers := pg_catalog.array_fill(null::jsonb, array[pg_catalog.jsonb_array_length(p_items)]);
    for v_item in
        select x.ord, x.v
        from pg_catalog.jsonb_array_elements(p_items) with ordinality x(v, ord)
        order by (x.v ->> 'id')::uuid, x.ord
    loop
        v_answers[v_item.ord] := pgconductor.invoke_child(p_worker_id, (v_item.v ->> 'id')::uuid,
            (v_item.v ->> 'run')::int, v_item.v ->> 'step', v_item.v ->> 'task_name',
            coalesce(v_item.v -> 'payload', '{}'::jsonb), (v_item.v ->> 'timeout_ms')::bigint, v_item.v ->> 'queue');
    end loop;
    return pg_catalog.to_jsonb(v_answers);
end;
$$;
comment on function pgconductor.invoke_children(uuid, jsonb) is
    'Worker: invoke_child for many parents in one call; answers in item order.';

-- Saves the outcomes of finished child executions as their parents' steps ({"child_id",
-- "status", "result", "error"}; the first outcome of a step wins, so a timeout stays a
-- timeout) and makes each parent that waits on such a step ready at once. p_children:
-- [{"id", "parent_id", "step", "status", "result", "error"}, ...]; parents already
-- removed by retention are skipped. Callers hold the children's rows; the parents are
-- locked here, after them (the order cancel keeps too).
create function pgconductor._settle_children(p_children jsonb)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
    v_now timestamptz := pgconductor.now();
    v_queues text[];
begin
    -- Lock the parents first: a parent still running may be about to wait on this very
    -- step (invoke_child holds it while deciding); once it commits, the statement below
    -- sees it waiting, and its invoke_child, if later, sees the saved step.
    perform from pgconductor._executions p
    where p.id = any (array(
        select (x ->> 'parent_id')::uuid from pg_catalog.jsonb_array_elements(p_children) x
        where x ->> 'parent_id' is not null))
    order by p.id
    for no key update;

    with c as (
        select x.id, x.parent_id, x.step, x.status, x.result, x.error
        from pg_catalog.jsonb_to_recordset(p_children)
            as x(id uuid, parent_id uuid, step text, status text, result jsonb, error jsonb)
        where x.parent_id is not null
    ), saved as (
        insert into pgconductor._steps (execution_id, name, result, created_at)
        select c.parent_id, c.step, pg_catalog.jsonb_build_object(
                   'child_id', c.id, 'status', c.status, 'result', c.result, 'error', c.error), v_now
        from c
        where exists (select 1 from pgconductor._executions p where p.id = c.parent_id)
        on conflict (execution_id, name) do nothing
        returning execution_id, name
    ), woken as (
        -- Only a parent waiting on this very step wakes: one asleep, or waiting on
        -- another child, stays so.
        update pgconductor._executions p
        set status = 'pending', run_at = v_now, wait_step = null
        from saved
        where p.id = saved.execution_id and p.status = 'waiting' and p.wait_step = saved.name
        returning p.queue
    )
    select pg_catalog.array_agg(distinct w.queue) into v_queues from woken w;
    perform pg_catalog.pg_notify(pgconductor.queue_channel(q), '') from pg_catalog.unnest(v_queues) q;
end;
$$;
