"""WebSocket routes. The live streams arrive with the API/WebSocket work; the
router exists now so that the ASGI app is complete."""

websocket_urlpatterns: list = []
