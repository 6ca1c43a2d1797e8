"""`calltrack doctor`: checks a deployment and says, per finding, what to do.

Each check is a function of the deployment that returns findings; none changes
anything (the database write test is rolled back, the AMI session logs off).
"""
