"""The master of masters' side of a syndic, on a real master, with what a syndic sends.

Salt 3008.4's own ``salt-syndic`` does not forward here, even without saltext-fleet: a bare
master of masters, syndic and minion (auto-accepting, no extension) got no return through
the syndic for 4 jobs in a row (45 s each); its log shows "Payload decryption failed even
after re-authenticating" on the publish channel and ``_return_pub_syndic`` failing on every
loop with "'str' object has no attribute 'done'" (it keeps the answer of a ``sync=True``
send as if it were a future). ``test_syndic.py`` runs the real daemons when
``FLEET_SYNDIC_DAEMONS=1``.

So here a real salt-master (one of this package's hot-hot pair: ``_syndic_return`` and
``_minion_event`` do not depend on ``order_masters``) receives, over Salt's authenticated
request channel, exactly the two messages a 3008.4 syndic sends for a job of its minion:

- the forwarded ``salt/job/<jid>/new`` event naming its minion (in a ``_minion_event``
  batch: the master stores the minion list with ``syndic_id`` = the sender's authenticated id);
- the ``_syndic_return`` load ``Minion._return_pub_multi(ret_cmd="_syndic_return")`` builds
  (``id`` = the syndic, ``return`` = ``{minion: {"return", "retcode", "success",
  "fun_args"}}``, ``load`` = the publish), sent twice as a syndic retries after a timeout.

The sender is a real minion key the master accepted, as a syndic's is. Another accepted key
then claims the same node for the job: the node is shown as disputed, never as the liar's.
"""

import pytest
import salt.utils.jid
from saltfactories.utils import random_string
from sqlalchemy import select

from saltext_fleet.store.models import Return
from tests.multimaster.conftest import assert_claim_disputed, carriers, served
from tests.support.forge import send_batch, send_load
from tests.support.harness import ACCEPTED_BY_HARNESS
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def liar(mm_masters):
    first, _second = mm_masters
    minion_id = random_string("syn-liar-")
    ACCEPTED_BY_HARNESS.add(minion_id)
    factory = first.salt_minion_daemon(minion_id)
    with factory.started():
        yield factory


def _announce(sender, jid: str, minions: list[str]) -> None:
    # (the master's answer to an events batch is not a receipt: the store says what it did)
    send_batch(sender, [{"tag": f"salt/job/{jid}/new", "data": {"jid": jid, "minions": minions}}])


def test_a_carried_return_is_stored_once_with_its_syndic(mm_masters, mm_minion, liar, store):
    mom = mm_masters[0]
    syndic = mm_minion  # the authenticated key that speaks as a syndic
    leaf = random_string("leaf-")  # a minion under the syndic: the MoM holds no key for it
    token = random_string("carried-")
    jid = salt.utils.jid.gen_jid({})
    publish = {"jid": jid, "fun": "test.echo", "arg": [token], "tgt": leaf, "tgt_type": "glob"}
    _announce(syndic, jid, [leaf])
    load = {
        "cmd": "_syndic_return",
        "load": [
            {
                "id": syndic.id,
                "jid": jid,
                "fun": "test.echo",
                "arg": [token],
                "tgt": leaf,
                "tgt_type": "glob",
                "load": publish,
                "master_id": "lower-master",
                "return": {
                    leaf: {"return": token, "retcode": 0, "success": True, "fun_args": [token]}
                },
            }
        ],
    }
    for _retry in range(2):
        send_load(syndic, load)

    def stored():
        with store.connect() as conn:
            return conn.execute(
                select(Return.minion_id, Return.master_id).where(
                    Return.jid == jid, Return.fun == "test.echo"
                )
            ).all()

    wait_for("the carried return in the store", stored, timeout=60)
    wait_for("the node of the carried return", lambda: served(store, leaf), timeout=30)
    assert stored() == [(leaf, mom.id)]  # once, stored by the master that heard it
    assert carriers(store, jid, leaf) == {
        "syndic": syndic.id,
        "via": mom.id,
        "claimants": [syndic.id],
        "disputed": False,
    }
    assert served(store, leaf)["syndic"] == syndic.id

    # Another accepted key claims the syndic's node for the job, as a syndic announces.
    _announce(liar, jid, [leaf, liar.id])
    assert_claim_disputed(store, jid, leaf, syndic.id, liar.id)
