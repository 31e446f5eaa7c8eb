"""The operator application: the workspace, promotion and rollback (local and on AWS), status,
the Fargate training runner, the local API and the demo. The CLI (`sds.cli`) is its front end."""
