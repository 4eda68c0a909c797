"""The node side's job watcher: run and attach, the watch session, the job's end, the sinks."""
