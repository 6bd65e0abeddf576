from twisted.application.service import ServiceMaker

erq = ServiceMaker(
    "erq", "erq.tap", "A durable message queue server (memcache protocol)", "erq"
)
