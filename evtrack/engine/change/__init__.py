"""Changes to the data of a deployed workspace, beside appends.

- ``copies``: copy pipes run once or on their schedule, appending or replacing their target;
- ``lifecycle``: delete by condition (with the rollups it reaches), truncate, replace, drop.
"""
