"""orchestra.train"""
