"""Deploying a project into a workspace: plan, build aside, promote, recover.

- ``deployer``: datasources, then pipes, then tokens; staged deployments; the deployment history;
- ``schema``: a datasource's tables, changed in place when compatible, rebuilt with ``force``;
- ``views``: materialized pipes as views, and what a change of one refills;
- ``refill``: targets filled aside under staging names and promoted in one journaled step;
- ``materialized``: the columns a view writes, backfills, and which datasources feed which.
"""
