"""The Docker Swarm target: the same stack, deployed with `docker stack deploy`.

``render`` turns the rendered compose model into a stack file, ``secrets`` keeps Swarm
secrets in step with the stack's secrets file, ``runtime`` deploys (in dependency stages),
reads readiness from service tasks and removes the stack, ``preflight`` checks the swarm and
its node labels, ``lifecycle`` ties them to `difystack up/status/down/logs`.
"""
