-- pgconductor: lease recovery and retention.

-- Returns executions held by workers whose heartbeat is older than their lease to
-- pending (the attempt stays counted), or to failed when that was the last attempt,
-- or to cancelled when a cancel was requested; forgets those workers. Returns the count.
create function pgconductor._recover_leases(p_now timestamptz)
returns int
language plpgsql
volatile
set search_path = ''
as $$
declare
    v_count int;
    v_queues text[];
    v_finished boolean;
    v_children jsonb;
begin
    with expired as (
        select e.id,
               case
                   when e.cancel_reason is not null then 'cancelled'
                   when e.attempts >= pgconductor._max_attempts(e.task_name, e.max_attempts) then 'failed'
                   else 'pending'
               end as next
        from pgconductor._executions e
        where e.status = 'running'
          and not exists (
              select 1 from pgconductor._workers w
              where w.id = e.worker_id and w.last_seen_at >= p_now - w.lease)
        for update of e skip locked
    ), lost as (
        update pgconductor._executions e
        set status = x.next,
            error = case
                        when x.next = 'cancelled' then
                            pg_catalog.jsonb_build_object('type', 'Cancelled', 'message', e.cancel_reason)
                        else pg_catalog.jsonb_build_object('type', 'WorkerLost', 'message',
                            format('worker %s stopped heartbeating during attempt %s', e.worker_id, e.attempts))
                    end,
            run_at = case when x.next = 'pending' then p_now else e.run_at end,
            finished_at = case when x.next <> 'pending' then p_now end,
            expires_at = case when x.next <> 'pending' then pgconductor._expires_at(e.task_name, x.next, p_now) end,
            worker_id = null
        from expired x
        where e.id = x.id
        returning e.id, e.queue, e.status, e.parent_id, e.parent_step, e.error
    )
    select pg_catalog.count(*), pg_catalog.array_agg(distinct l.queue) filter (where l.status = 'pending'),
           coalesce(pg_catalog.bool_or(l.status <> 'pending'), false),
           pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'id', l.id, 'parent_id', l.parent_id, 'step', l.parent_step, 'status', l.status,
               'result', null, 'error', l.error)) filter (where l.parent_id is not null and l.status <> 'pending')
    into v_count, v_queues, v_finished, v_children
    from lost l;

    if v_children is not null then
        perform pgconductor._settle_children(v_children);
    end if;

    delete from pgconductor._workers w where w.last_seen_at < p_now - w.lease;
    if v_finished then
        perform pg_catalog.pg_notify('pgconductor.finished', '');
    end if;
    perform pg_catalog.pg_notify(pgconductor.queue_channel(q), '') from pg_catalog.unnest(v_queues) q;
    return v_count;
end;
$$;

-- One bounded maintenance step, run by one session at a time across the cluster
-- (transaction advisory lock; others return at once with ran = false): recovers
-- expired leases and deletes at most p_chunk expired finished executions.
-- Returns {"ran", "recovered", "deleted", "more"}; call again while "more" is true.
create function pgconductor.maintenance(p_chunk int default 1000)
returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
declare
    v_now timestamptz := pgconductor.now();
    v_recovered int;
    v_deleted int;
begin
    if p_chunk is null or p_chunk <= 0 then
        perform pgconductor._invalid('chunk', 'must be a positive integer', p_chunk::text);
    end if;
    if not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtextextended('pgconductor.maintenance', 0)) then
        return pg_catalog.jsonb_build_object('ran', false, 'recovered', 0, 'deleted', 0, 'more', false);
    end if;
    v_recovered := pgconductor._recover_leases(v_now);

    with expired as (
        select e.id from pgconductor._executions e
        where e.expires_at is not null and e.expires_at <= v_now
        order by e.expires_at
        limit p_chunk
        for update skip locked
    )
    delete from pgconductor._executions e using expired where e.id = expired.id;
    get diagnostics v_deleted = row_count;

    -- Throttle windows that have closed are forgotten (a new call opens a new window).
    delete from pgconductor._throttles t
    where t.ctid = any (array(
        select c.ctid from pgconductor._throttles c where c.window_ends_at <= v_now limit p_chunk));

    return pg_catalog.jsonb_build_object(
        'ran', true, 'recovered', v_recovered, 'deleted', v_deleted, 'more', v_deleted = p_chunk);
end;
$$;
comment on function pgconductor.maintenance(int) is
    'Worker: one bounded maintenance step (lease recovery, retention), one session at a time; call again while more is true.';

-- Runs a whole maintenance pass now (waits for any concurrent pass): lease recovery,
-- then retention until nothing expired is left. Returns the totals.
create function pgconductor.run_maintenance()
returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
declare
    v_step jsonb;
    v_recovered int := 0;
    v_deleted int := 0;
begin
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('pgconductor.maintenance', 0));
    loop
        v_step := pgconductor.maintenance(1000);
        v_recovered := v_recovered + (v_step ->> 'recovered')::int;
        v_deleted := v_deleted + (v_step ->> 'deleted')::int;
        exit when not (v_step ->> 'more')::boolean;
    end loop;
    return pg_catalog.jsonb_build_object('recovered', v_recovered, 'deleted', v_deleted);
end;
$$;
comment on function pgconductor.run_maintenance() is
    'Run one full maintenance pass at once: lease recovery, retention, expiry.';
