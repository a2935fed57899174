import asyncio
import sys

from mistral_serve.store import Store
from mistral_serve.store.database import sqlite_url
from tests.support import until

#: A process that imports the store, says so, waits for the go, then opens the store.
OPENER = """
import asyncio, pathlib, sys, time
from mistral_serve.store import Store
folder = pathlib.Path(sys.argv[2])
(folder / f"ready-{sys.argv[3]}").touch()
while not (folder / "go").exists():
    time.sleep(0.001)
async def main():
    store = await Store.open(sys.argv[1])
    await store.close()
asyncio.run(main())
"""


async def test_processes_opening_a_new_sqlite_store_at_once_take_turns_migrating(tmp_path):
    """Gateway workers start together on a new file: each migrates it in turn (a lock file),
    none fails creating a table another just made."""
    url = sqlite_url(tmp_path)
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", OPENER, url, str(tmp_path), str(n)
        )
        for n in range(4)
    ]
    await until(lambda: len(list(tmp_path.glob("ready-*"))) == 4, 60, "the openers imported")
    (tmp_path / "go").touch()
    assert [await worker.wait() for worker in workers] == [0, 0, 0, 0]
    store = await Store.open(url)  # and it is at the latest schema
    await store.close()
