-- pgconductor: durable steps.

-- Saves the result of a step of a running execution held by this worker (this attempt),
-- in one round trip. The first save of a name wins: a reused name keeps its first
-- result. Returns {"held": bool, "result": <the stored result>, "cancel_reason": text}:
-- held false means the execution is no longer this worker's (nothing saved); a
-- cancel_reason means its cancellation was requested.
create function pgconductor.save_step(
    p_worker_id uuid,
    p_execution_id uuid,
    p_attempt int,
    p_name text,
    p_result jsonb
)
returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
declare
    v_reason text;
    v_stored jsonb;
begin
    perform pgconductor._check_name('name', p_name, 200);
    select e.cancel_reason into v_reason
    from pgconductor._executions e
    where e.id = p_execution_id and e.status = 'running' and e.worker_id = p_worker_id
      and e.attempts = p_attempt;
    if not found then
        return pg_catalog.jsonb_build_object('held', false, 'result', null, 'cancel_reason', null);
    end if;
    insert into pgconductor._steps (execution_id, name, result, created_at)
    values (p_execution_id, p_name, coalesce(p_result, 'null'::jsonb), pgconductor.now())
    on conflict (execution_id, name) do nothing;
    select s.result into v_stored from pgconductor._steps s
    where s.execution_id = p_execution_id and s.name = p_name;
    return pg_catalog.jsonb_build_object('held', true, 'result', v_stored, 'cancel_reason', v_reason);
end;
$$;
comment on function pgconductor.save_step(uuid, uuid, int, text, jsonb) is
    'Worker: save a step result of a held running execution (first save of a name wins); reports cancellation.';

-- Tells a running execution held by this worker (this attempt) whether it may go on:
-- {"held": bool, "cancel_reason": text, "window_opens_at": timestamptz}. A window_opens_at
-- means its task's window is closed now: the worker should release it (report outcome
-- released), and it then waits until that instant. Writes nothing.
create function pgconductor.checkpoint(p_worker_id uuid, p_execution_id uuid, p_attempt int)
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
      and e.attempts = p_attempt;
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
