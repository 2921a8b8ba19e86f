"""Queue infrastructure shared by every process: the Celery app, queue names, the one publisher
(requests and webhook deliveries, after their rows are committed), the reconciler and the
workers' heartbeats. It imports only the layers below it, never a process package."""
