"""A first conversation with the server over an in-memory transport."""

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from erq.protocol import QueueFactory
from erq.service import QueueService


class SmokeTests(SynchronousTestCase):
    def test_set_then_get(self) -> None:
        service = QueueService(reactor=Clock())
        protocol = QueueFactory(service).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"set q 3 0 5\r\nhello\r\nget q\r\nget q\r\n")
        self.assertEqual(
            transport.value(), b"STORED\r\nVALUE q 3 5\r\nhello\r\nEND\r\nEND\r\n"
        )
