"""The shortest path a user takes: define, invoke, run, read the result."""

from pgconductor import Conductor, Orchestrator


async def test_invoke_drain_wait_for_returns_the_result(conductor: Conductor) -> None:
    @conductor.task("add")
    async def add(event, ctx):  # type: ignore[no-untyped-def]
        return {"sum": event.payload["a"] + event.payload["b"]}

    execution_id = await add.invoke({"a": 2, "b": 3})
    await Orchestrator.create(conductor).drain()
    assert await conductor.wait_for(execution_id, timeout=5) == {"sum": 5}
    info = await conductor.get_execution(execution_id)
    assert info is not None and info.status == "completed" and info.attempts == 1
