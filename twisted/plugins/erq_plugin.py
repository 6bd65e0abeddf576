from twisted.application.service import ServiceMaker

erq = ServiceMaker(
    "erq", "erq.plugin", "A durable message queue server (memcache protocol)", "erq"
)
