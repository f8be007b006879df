"""Every data source, registered the same way (:mod:`.registry`): the embedded generator
(:mod:`.synthetic`) and the archive readers (:mod:`.archive`'s ``RealSource``: :mod:`.bigearthnet`,
:mod:`.sen12ms`, :mod:`.eurosat`, :mod:`.folder`), raster I/O (:mod:`.geotiff`), the archives'
allocation and decode-once cache (:mod:`.allocate`, :mod:`.cache`) and the fixture writers for the real
layouts (:mod:`.fixtures`)."""
