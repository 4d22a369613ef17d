"""Worker processes, one kind per task queue: workflow, cpu, gpu."""
