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
