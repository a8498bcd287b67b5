-- pgconductor: what users read.

-- Every execution, as users see it.
create view pgconductor.executions as
select e.id, e.task_name, e.queue, e.status, e.payload, e.result, e.error, e.attempts,
       coalesce(e.max_attempts, t.max_attempts, 3) as max_attempts, e.priority,
       nullif(e.run_at, 'infinity') as run_at,  -- null: waits for a child without a timeout
       e.created_at, e.started_at, e.finished_at, e.dedupe_key, e.parent_id,
       e.batch_id, e.event_name, e.worker_id, e.cancel_reason, e.expires_at
from pgconductor._executions e
left join pgconductor._tasks t on t.name = e.task_name;
comment on view pgconductor.executions is 'Every execution with its status, payload, result or error, attempts and timing.';

-- Per queue and task: counts by status and the age of the oldest ready pending execution.
-- Registered tasks without executions appear with zeros.
create view pgconductor.queue_stats as
with agg as (
    select e.queue, e.task_name,
           pg_catalog.count(*) filter (where e.status = 'pending') as pending,
           pg_catalog.count(*) filter (where e.status = 'running') as running,
           pg_catalog.count(*) filter (where e.status = 'waiting') as waiting,
           pg_catalog.count(*) filter (where e.status = 'completed') as completed,
           pg_catalog.count(*) filter (where e.status = 'failed') as failed,
           pg_catalog.count(*) filter (where e.status = 'cancelled') as cancelled,
           pgconductor.now() - pg_catalog.min(e.run_at) filter (
               where e.status = 'pending' and e.run_at <= pgconductor.now()) as oldest_pending_age
    from pgconductor._executions e
    group by e.queue, e.task_name
)
select coalesce(a.queue, t.queue) as queue, coalesce(a.task_name, t.name) as task_name,
       coalesce(a.pending, 0) as pending, coalesce(a.running, 0) as running,
       coalesce(a.waiting, 0) as waiting, coalesce(a.completed, 0) as completed,
       coalesce(a.failed, 0) as failed, coalesce(a.cancelled, 0) as cancelled,
       a.oldest_pending_age
from agg a
full join pgconductor._tasks t on t.name = a.task_name and t.queue = a.queue;
comment on view pgconductor.queue_stats is
    'Per queue and task: pending, running, waiting, completed, failed, cancelled; oldest ready pending age.';

-- Returns one execution by id (no row when unknown or deleted by retention).
create function pgconductor.get_execution(p_execution_id uuid)
returns setof pgconductor.executions
language sql
stable
set search_path = ''
as $$
    select * from pgconductor.executions x where x.id = p_execution_id
$$;
comment on function pgconductor.get_execution(uuid) is
    'One execution by id, as in the executions view; no row when unknown or removed by retention.';
