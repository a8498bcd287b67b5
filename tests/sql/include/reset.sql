-- The start of every regression file (\i, relative to extension/, where pg_regress runs):
-- terse errors, fixed output formats, fake time allowed, and no executions, tasks,
-- workers or queues left over.
\set VERBOSITY terse
set pgconductor.allow_fake_time = on;
set timezone = 'UTC';
set datestyle = 'ISO, YMD';
set intervalstyle = 'postgres';
set client_min_messages = warning;
truncate pgconductor._executions cascade;
reset client_min_messages;
delete from pgconductor._tasks;
delete from pgconductor._workers;
delete from pgconductor._queues;
