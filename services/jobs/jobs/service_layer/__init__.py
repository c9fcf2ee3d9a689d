"""Use cases of the jobs service and the ports (unit of work, participants) they need."""
