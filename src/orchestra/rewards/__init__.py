"""orchestra.rewards"""
