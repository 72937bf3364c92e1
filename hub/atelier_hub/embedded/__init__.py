"""The embedded mode (``atelier dev``): one machine, JupyterHub as the supervisor.

Modules, each one job:
- ``state_folder``: the state folder (``StateFolder``: paths, secrets, ports, mode 0700),
  importing no service;
- ``stack``: the stack's life cycle above the services (``EmbeddedStack``: which services
  run, the deployment settings, a user's removal);
- ``users`` and ``auth``: the users file, invites and the hub's authenticator;
- ``spawner_base``: what the process and container spawners share (free GPUs, the spawn
  form, per-user S3 keys); ``process_spawner``: sessions as local processes (single-user
  mode); ``container_spawner``: sessions as containers, each in its own network;
- ``engine`` (the Docker engine, standard library only: the installer reads it),
  ``netns_relay`` (a session's one way in and out), ``cgroups``, ``gpus``;
- ``templates/``: the spawn form and the admin page.

Nothing is imported here: the installer imports ``engine`` from the system Python.
"""
