"""Load-balancer data planes (HAProxy) behind one small contract."""
