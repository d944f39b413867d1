"""TLS: certificates and SNI (:mod:`.certs`) and what routes say about TLS (:mod:`.routes`).
The HTTPS listener itself is part of the front end (simpleproxy/frontend/tls.py)."""
