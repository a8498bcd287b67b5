-- pgconductor: durable steps.

-- Saves step results of running executions held by this worker (each in the run the claim
-- gave it), many in one call: p_steps is [{"id", "run", "name", "result"}, ...]. The first save of a
-- name wins: a reused name keeps its first result. Returns, in item order,
-- [{"held": bool, "result": <the stored result>, "cancel_reason": text}, ...]: held false
-- means the execution is no longer this worker's (nothing saved); a cancel_reason means
-- its cancellation was requested. A bad item raises PGC01 and nothing is saved.
create function pgconductor.save_steps(p_worker_id uuid, p_steps jsonb)
returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
declare
    v_bad record;
    v_answer jsonb;
begin
    if p_steps is null or pg_catalog.jsonb_typeof(p_steps) <> 'array' then
        perform pgconductor._invalid('steps', 'must be a JSON array', p_steps::text);
    end if;
    select x.ord, x.v into v_bad
    from pg_catalog.jsonb_array_elements(p_steps) with ordinality x(v, ord)
    where pg_catalog.jsonb_typeof(x.v) <> 'object'
       or pg_catalog.jsonb_typeof(x.v -> 'name') is distinct from 'string'
       or pg_catalog.btrim(x.v ->> 'name') = '' or pg_catalog.octet_length(x.v ->> 'name') > 200
       or not pgconductor._is_run_ref(x.v)
    order by x.ord limit 1;
    if found then
        perform pgconductor._invalid(format('steps[%s]', v_bad.ord - 1),
            'must be {"id": uuid, "run": int, "name": 1..200 bytes, "result": json}', v_bad.v::text);
    end if;

    with s as (
        select x.ord, (x.v ->> 'id')::uuid as id, (x.v ->> 'run')::int as run, x.v ->> 'name' as name,
               coalesce(x.v -> 'result', 'null'::jsonb) as result
        from pg_catalog.jsonb_array_elements(p_steps) with ordinality x(v, ord)
    ), held as (
        select s.ord, s.id, s.name, s.result, e.cancel_reason
        from s
        join pgconductor._executions e on e.id = s.id
        where e.status = 'running' and e.worker_id = p_worker_id and e.claims = s.run
    ), saved as (
        insert into pgconductor._steps (execution_id, name, result, created_at)
        select h.id, h.name, h.result, pgconductor.now() from held h
        on conflict (execution_id, name) do nothing
        returning execution_id, name, result
    )
    select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'held', h.id is not null,
               -- Not saved now: the name was saved before (its first result wins).
               'result', case when h.id is not null then coalesce(
                   (select v.result from saved v where v.execution_id = h.id and v.name = h.name),
                   (select p.result from pgconductor._steps p where p.execution_id = h.id and p.name = h.name)) end,
               'cancel_reason', h.cancel_reason) order by s.ord)
    into v_answer
    from s left join held h on h.ord = s.ord;
    return coalesce(v_answer, '[]'::jsonb);
end;
$$;
comment on function pgconductor.save_steps(uuid, jsonb) is
    'Worker: save many step results of held running executions in one call (first save of a name wins); reports cancellations.';

-- save_steps for one step: returns {"held", "result", "cancel_reason"}.
create function pgconductor.save_step(
    p_worker_id uuid,
    p_execution_id uuid,
    p_run int,
    p_name text,
    p_result jsonb
)
returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
begin
    perform pgconductor._check_name('name', p_name, 200);
    return pgconductor.save_steps(p_worker_id, pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
        'id', p_execution_id, 'run', p_run, 'name', p_name, 'result', coalesce(p_result, 'null'::jsonb)))) -> 0;
end;
$$;
comment on function pgconductor.save_step(uuid, uuid, int, text, jsonb) is
    'Worker: save one step result of a held running execution (first save of a name wins); reports cancellation.';

-- Tells a running execution held by this worker (in this run) whether it may go on:
-- {"held": bool, "cancel_reason": text, "window_opens_at": timestamptz}. A window_opens_at
-- means its task's window is closed now: the worker should release it (report outcome
-- released), and it then waits until that instant. Writes nothing.
create function pgconductor.checkpoint(p_worker_id uuid, p_execution_id uuid, p_run int)
returns jsonb
language plpgsql
stable
set search_path = ''
as $$
declare
    v_now timestamptz := pgconductor.now();
    v_row record;
    v_opens timestamptz;
begin
    select e.cancel_reason, t.window_start, t.window_end, t.window_timezone into v_row
    from pgconductor._executions e
    left join pgconductor._tasks t on t.name = e.task_name
    where e.id = p_execution_id and e.status = 'running' and e.worker_id = p_worker_id
      and e.claims = p_run;
    if not found then
        return pg_catalog.jsonb_build_object('held', false, 'cancel_reason', null, 'window_opens_at', null);
    end if;
    v_opens := pgconductor._window_opens_at(v_row.window_start, v_row.window_end, v_row.window_timezone, v_now);
    return pg_catalog.jsonb_build_object('held', true, 'cancel_reason', v_row.cancel_reason,
        'window_opens_at', case when v_opens > v_now then v_opens end);
end;
$$;
comment on function pgconductor.checkpoint(uuid, uuid, int) is
    'Worker: may a held running execution go on? Reports a requested cancel and a closed window (with its next opening).';
