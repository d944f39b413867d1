"""TLS termination: certificates and SNI (:mod:`.certs`), the front listener (:mod:`.front`),
and what routes say about TLS (:mod:`.routes`)."""
